"""OncoSeg: SAM3 + LoRA segmentation of tumours and organs in 3D Slicer (points, boxes, scribbles, text, propagation).

Thin glue only: every decision lives in ``OncoSegLib.slicer_support`` (pure Python, tested with pytest). This file
reads nodes into numpy, hands work to the single model worker thread, and writes results back into MRML on the
main thread.
"""

import importlib.metadata
import logging
import os
import sys
import tempfile
from typing import Annotated

import numpy as np

import qt
import slicer
import vtk
import vtk.util.numpy_support
from slicer import (vtkMRMLMarkupsCurveNode, vtkMRMLMarkupsFiducialNode, vtkMRMLMarkupsROINode,
                    vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


def _ensureOncoSegLib():
    """Make OncoSegLib importable: installed beside this file, or in the clone root ("Add module path")."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(candidate, "OncoSegLib")) and candidate not in sys.path:
            sys.path.insert(0, candidate)
            break


_ensureOncoSegLib()

from OncoSegLib.errors import Cancelled, OncoSegError  # noqa: E402
from OncoSegLib.slicer_support import core as oncoCore  # noqa: E402
from OncoSegLib.slicer_support import dependencies as oncoDeps  # noqa: E402
from OncoSegLib.slicer_support import dicom_tags as oncoDicomTags  # noqa: E402
from OncoSegLib.slicer_support import geometry as oncoGeometry  # noqa: E402
from OncoSegLib.slicer_support import merge as oncoMerge  # noqa: E402
from OncoSegLib.slicer_support import params as oncoParams  # noqa: E402
from OncoSegLib.slicer_support import prompts as oncoPrompts  # noqa: E402
from OncoSegLib.slicer_support.worker import ModelWorker  # noqa: E402

MODULE_NAME = "OncoSeg"


#
# OncoSeg
#


class OncoSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("OncoSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []  # PyTorch and SlicerRT are optional at load time, checked on use
        self.parent.contributors = ["OncoSeg developers"]
        self.parent.helpText = _("""
Segment tumours and organs with SAM3 + LoRA adapters: click points (+/-), draw a box or a scribble, or type what to
find ("liver tumor"), then propagate through the volume. Export RTSTRUCT, DICOM SEG or NIfTI.
See <a href="https://github.com/oncoseg/OncoSeg/blob/main/docs/slicer.md">the module documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Built on Meta's SAM 3 (Hugging Face transformers), Onco-Seg LoRA adapters, SlicerRT and the PyTorch extension.
""")


#
# Parameter node
#


@parameterNodeWrapper
class OncoSegParameterNode:
    """Settings, node selections and prompts, saved with the scene.

    promptsJson - the last applied prompts in voxel coordinates (restores the session after a scene reload).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    positivePoints: vtkMRMLMarkupsFiducialNode
    negativePoints: vtkMRMLMarkupsFiducialNode
    boxROI: vtkMRMLMarkupsROINode
    scribble: vtkMRMLMarkupsCurveNode
    segmentName: str = "Segment_1"
    textPrompt: str = ""
    modality: Annotated[str, Choice(list(oncoParams.MODALITY_CHOICES))] = "auto"
    model: str = "latest"
    device: Annotated[str, Choice(list(oncoParams.DEVICE_CHOICES))] = "auto"
    propagateDirection: Annotated[str, Choice(list(oncoParams.DIRECTION_CHOICES))] = "both"
    propagateMethod: Annotated[str, Choice(list(oncoParams.METHOD_CHOICES))] = "memory"
    overwritePolicy: Annotated[str, Choice(list(oncoParams.OVERWRITE_CHOICES))] = "protect"
    promptAxis: Annotated[str, Choice(list(oncoParams.AXIS_CHOICES))] = "auto"
    lowConfidence: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    autoRun: bool = True
    promptsJson: str = ""


#
# Shared engine: one model, one worker thread for the whole application (widget and console share them)
#

_ENGINE = {}


def sharedEngine():
    """(core, worker, undo stack) shared by every OncoSegLogic: the model is loaded once, all model work runs on one
    thread, and Undo sees every AI edit whichever Logic instance (widget or console) wrote it."""
    if not _ENGINE:
        _ENGINE["core"] = oncoCore.OncoSegCore()
        _ENGINE["worker"] = ModelWorker("OncoSeg-model")
        _ENGINE["undo"] = oncoMerge.UndoStack()
    return _ENGINE["core"], _ENGINE["worker"], _ENGINE["undo"]


def shutdownEngine():
    """Stop the model worker thread and drop the model and undo records (module cleanup / application exit)."""
    if _ENGINE:
        _ENGINE["worker"].cancel_all()
        _ENGINE["worker"].shutdown()
        _ENGINE.clear()


#
# OncoSegWidget
#


class OncoSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedMarkups = []
        self._pollTimer = None
        self._modalityGuess = None
        self._lastBusy = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OncoSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = OncoSegLogic()

        # worker events are delivered on the main thread by this timer (the UI never waits on the model)
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(30)
        self._pollTimer.connect("timeout()", self.onPoll)
        self._pollTimer.start()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.addItems(self.logic.modelNames())
        self.ui.modelComboBox.connect("currentTextChanged(QString)", self.onModelTextChanged)
        self.ui.loadModelButton.connect("clicked(bool)", self.onLoadModel)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.browseModelButton.connect("clicked(bool)", self.onBrowseModel)
        self.ui.installButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.textButton.connect("clicked(bool)", self.onSegmentText)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.clearPromptsButton.connect("clicked(bool)", self.onClearPrompts)
        self.ui.exportRTButton.connect("clicked(bool)", self.onExportRTStruct)
        self.ui.exportSEGButton.connect("clicked(bool)", self.onExportSEG)
        self.ui.exportNIfTIButton.connect("clicked(bool)", self.onExportNIfTI)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)

        self.ui.measurementsTable.setColumnCount(len(oncoCore.MEASUREMENT_COLUMNS))
        self.ui.measurementsTable.setHorizontalHeaderLabels(list(oncoCore.MEASUREMENT_COLUMNS))
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.enabled = False

        self.initializeParameterNode()
        self.updateDependencyStatus()

    def cleanup(self) -> None:
        self.removeObservers()
        if self._pollTimer is not None:
            self._pollTimer.stop()
        shutdownEngine()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ----- parameter node -----
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                p.inputVolume = firstVolumeNode
        self.logic.ensurePromptNodes(p)
        self.ui.positivePlaceWidget.setCurrentNode(p.positivePoints)
        self.ui.negativePlaceWidget.setCurrentNode(p.negativePoints)
        self.ui.boxPlaceWidget.setCurrentNode(p.boxROI)
        self.ui.scribblePlaceWidget.setCurrentNode(p.scribble)
        self.observePromptNodes()
        self.ui.modelComboBox.setCurrentText(p.model)

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.updateButtons()

    def observePromptNodes(self) -> None:
        for node in self._observedMarkups:
            self.removeObserver(node, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onPromptPlaced)
        self._observedMarkups = []
        p = self._parameterNode
        for node in (p.positivePoints, p.negativePoints, p.boxROI, p.scribble):
            if node:
                self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onPromptPlaced)
                self._observedMarkups.append(node)

    def updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.inputVolume)
        busy = self.logic.worker.busy
        for button in (self.ui.segmentButton, self.ui.textButton, self.ui.propagateButton):
            button.enabled = ready and not busy
        self.ui.cancelButton.enabled = busy
        self.ui.undoButton.enabled = self.logic.canUndo()

    # ----- worker events -----
    def onPoll(self) -> None:
        busy = self.logic.worker.busy
        try:
            delivered = self.logic.worker.poll()
        except Exception as e:  # a failing callback must not stop the timer
            logging.exception("OncoSeg callback failed")
            self.showError(e)
            delivered = 1
        if delivered or busy != self._lastBusy:
            self._lastBusy = busy
            self.updateButtons()

    def showError(self, error) -> None:
        self.setBusy(False)
        message = str(error) if isinstance(error, OncoSegError) else _("Unexpected error: {error}").format(error=error)
        self.ui.statusLabel.text = message
        if not isinstance(error, Cancelled):
            slicer.util.errorDisplay(message, windowTitle=_("OncoSeg"))

    def setBusy(self, busy, message="") -> None:
        self.ui.progressBar.setVisible(busy)
        if busy:
            self.ui.progressBar.setRange(0, 0)  # busy indicator until the first progress report
        if message:
            self.ui.statusLabel.text = message
        self.updateButtons()

    def onProgress(self, done, total, message) -> None:
        self.ui.progressBar.setRange(0, max(1, total))
        self.ui.progressBar.setValue(done)
        if message:
            self.ui.statusLabel.text = message

    # ----- inputs -----
    def onInputVolumeChanged(self, node) -> None:
        self._modalityGuess = None
        if node is None:
            self.ui.modalityReasonLabel.text = ""
            return
        guess = self.logic.detectModality(node)
        self._modalityGuess = guess
        self.ui.modalityReasonLabel.text = oncoParams.modality_status(
            self._parameterNode.modality if self._parameterNode else "auto",
            guess.modality if guess else None, guess.confidence if guess else None, guess.reason if guess else None)

    def onPromptPlaced(self, caller, event) -> None:
        """Record the slice axis of the view the point was placed in; auto-run for point prompts.

        The newest control point is not necessarily the last one (a preview point follows the mouse while placing),
        so every defined point without a recorded axis gets the axis of the view under the cursor now.
        """
        axis = None
        for n in self.logic.definedControlPoints(caller):
            if not caller.GetNthControlPointDescription(n):
                axis = axis or self.logic.axisUnderCursor(self._parameterNode)
                caller.SetNthControlPointDescription(n, axis)
        isPoint = caller in (self._parameterNode.positivePoints, self._parameterNode.negativePoints)
        if isPoint and self._parameterNode.autoRun:
            self.runPrompts(interactive=True)

    # ----- model -----
    def onModelTextChanged(self, text) -> None:
        if self._parameterNode and text:
            self._parameterNode.model = text

    def onBrowseModel(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Model folder"))
        if path:
            self.ui.modelComboBox.setCurrentText(path)

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Import model folder (offline sites)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to import the model."), waitCursor=True):
            name = self.logic.importModel(path)
            self.ui.modelComboBox.addItem(name)
            self.ui.modelComboBox.setCurrentText(name)
            self.ui.modelStatusLabel.text = _("Imported model {name}").format(name=name)

    def onLoadModel(self) -> None:
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        self.setBusy(True, _("Loading model {model} (downloads on first use)...").format(model=p.model))
        self.logic.submitLoadModel(p.model, p.device, onDone=self.onModelLoaded, onError=self.showError,
                                   onProgress=self.onProgress)

    def onModelLoaded(self, status) -> None:
        self.setBusy(False)
        self.ui.modelStatusLabel.text = status

    # ----- dependencies -----
    def updateDependencyStatus(self) -> None:
        plan = self.logic.dependencyPlan()
        self.ui.dependencyLabel.text = (_("All dependencies installed") if plan.nothing_to_do
                                        else _("Dependencies missing: press Install"))
        self.ui.dependencyLabel.toolTip = plan.summary()

    def ensureDependencies(self) -> bool:
        plan = self.logic.dependencyPlan()
        if plan.nothing_to_do:
            return True
        return self.onInstallDependencies()

    def onInstallDependencies(self) -> bool:
        plan = self.logic.dependencyPlan()
        if plan.nothing_to_do:
            slicer.util.infoDisplay(plan.summary(), windowTitle=_("OncoSeg dependencies"))
            return True
        if not slicer.util.confirmOkCancelDisplay(
                _("OncoSeg needs to install Python packages (this takes a few minutes):") + "\n\n" + plan.summary(),
                windowTitle=_("OncoSeg dependencies")):
            return False
        with slicer.util.tryWithErrorDisplay(_("Failed to install dependencies."), waitCursor=True):
            self.logic.installDependencies(plan)
        self.updateDependencyStatus()
        if self.logic.restartRequired and slicer.util.confirmYesNoDisplay(
                _("PyTorch was updated. Restart Slicer now to use it?"), windowTitle=_("OncoSeg dependencies")):
            slicer.util.restart()
        return self.logic.dependencyPlan().nothing_to_do

    # ----- prompts -----
    def runPrompts(self, interactive=False) -> None:
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        try:
            request = self.logic.promptRequest(p)
        except OncoSegError as e:
            self.showError(e)
            return
        job = self.logic.submitPrompts(request, dropIfBusy=interactive, onDone=self.onResult, onError=self.showError)
        if job is not None:
            self.setBusy(True, _("Segmenting {name}...").format(name=request["prompts"].name))

    def onSegment(self) -> None:
        self.runPrompts(interactive=False)

    def onSegmentText(self) -> None:
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Text prompt failed."), waitCursor=False):
            request = self.logic.textRequest(p, p.textPrompt)
            self.logic.submitText(request, onDone=self.onTextResults, onError=self.showError)
            self.setBusy(True, _("Finding '{text}'...").format(text=p.textPrompt))

    def onPropagate(self) -> None:
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Propagation failed."), waitCursor=False):
            request = self.logic.propagateRequest(p)
            self.logic.submitPropagate(request, onDone=self.onResult, onError=self.showError,
                                       onProgress=self.onProgress)
            self.setBusy(True, _("Propagating {name}...").format(name=p.segmentName))

    def onCancel(self) -> None:
        self.logic.cancel()
        self.ui.statusLabel.text = _("Cancelling (partial results are kept)...")

    # onResult/onTextResults are called by worker.poll() from onPoll, whose handler shows any error once
    # (slicer.util.tryWithErrorDisplay here would show a dialog and re-raise into a second one).
    def onResult(self, result) -> None:
        self.setBusy(False)
        p = self._parameterNode
        message = self.logic.writeResult(p.inputVolume, p.segmentation, result, p.overwritePolicy, parameterNode=p)
        self.ui.statusLabel.text = message
        self.showMeasurements([result])

    def onTextResults(self, results) -> None:
        self.setBusy(False)
        p = self._parameterNode
        for result in results:
            self.logic.writeResult(p.inputVolume, p.segmentation, result, p.overwritePolicy, parameterNode=p)
        self.showMeasurements(results)
        self.ui.statusLabel.text = _("{n} instance(s) found").format(n=len(results))

    def showMeasurements(self, results) -> None:
        table = self.ui.measurementsTable
        for result in results:
            rowIndex = None
            for r in range(table.rowCount):
                if table.item(r, 0) and table.item(r, 0).text() == result.name:
                    rowIndex = r
            if rowIndex is None:
                rowIndex = table.rowCount
                table.setRowCount(rowIndex + 1)
            for c, text in enumerate(result.row()):
                item = qt.QTableWidgetItem(text)
                if result.low:
                    item.setBackground(qt.QBrush(qt.QColor(255, 220, 160)))
                    item.setToolTip(_("Low confidence: check this segment and add prompts"))
                table.setItem(rowIndex, c, item)
        if results:
            last = results[-1]
            conf = "?" if last.iou is None else f"{last.iou:.2f}"
            self.ui.confidenceLabel.text = (_("Confidence {conf} - LOW, please review").format(conf=conf) if last.low
                                            else _("Confidence {conf}").format(conf=conf))

    def onUndo(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Undo failed."), waitCursor=True):
            self.ui.statusLabel.text = self.logic.undoLastEdit(self._parameterNode.segmentation)
        self.updateButtons()

    def onClearPrompts(self) -> None:
        self.logic.clearPrompts(self._parameterNode)

    # ----- export -----
    def _exportDirectory(self):
        return qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export folder"))

    def onExportRTStruct(self) -> None:
        outDir = self._exportDirectory()
        if outDir:
            with slicer.util.tryWithErrorDisplay(_("RTSTRUCT export failed."), waitCursor=True):
                paths = self.logic.exportRTStruct(self._parameterNode.segmentation, self._parameterNode.inputVolume, outDir)
                self.ui.statusLabel.text = _("Exported: {paths}").format(paths=", ".join(paths))

    def onExportSEG(self) -> None:
        outDir = self._exportDirectory()
        if outDir:
            with slicer.util.tryWithErrorDisplay(_("DICOM SEG export failed."), waitCursor=True):
                path = self.logic.exportSEG(self._parameterNode.segmentation, self._parameterNode.inputVolume, outDir)
                self.ui.statusLabel.text = _("Exported: {path}").format(path=path)

    def onExportNIfTI(self) -> None:
        outDir = self._exportDirectory()
        if outDir:
            with slicer.util.tryWithErrorDisplay(_("NIfTI export failed."), waitCursor=True):
                path = self.logic.exportNIfTI(self._parameterNode.segmentation, self._parameterNode.inputVolume, outDir)
                self.ui.statusLabel.text = _("Exported: {path}").format(path=path)


#
# OncoSegLogic
#


class OncoSegLogic(ScriptedLoadableModuleLogic):
    """Console/batch API; the widget uses the same methods. All model work runs on the shared worker thread.

    Example::

        logic = slicer.util.getModuleLogic("OncoSeg")  # or OncoSeg.OncoSegLogic()
        seg = logic.segment(volumeNode, {"points_ras": [[10.0, -20.0, 35.0]]}, model="latest")
        logic.exportRTStruct(seg, volumeNode, "/tmp/out")
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.core, self.worker, self.undoStack = sharedEngine()
        self.restartRequired = False

    def getParameterNode(self):
        return OncoSegParameterNode(super().getParameterNode())

    # ----- models and dependencies -----
    def modelNames(self):
        try:
            from OncoSegLib.models.registry import list_models

            return [row["name"] for row in list_models()]
        except Exception:  # registry unreadable: still offer the default
            return ["latest"]

    def importModel(self, path, name=None):
        from OncoSegLib.models.registry import import_model

        return import_model(path, name=name).name

    def installedVersions(self):
        return {d.metadata["Name"]: d.version for d in importlib.metadata.distributions() if d.metadata["Name"]}

    def dependencyPlan(self):
        constraints = os.path.join(slicer.app.temporaryPath, "OncoSeg-constraints.txt")
        return oncoDeps.plan_install(self.installedVersions(), constraints)

    def installDependencies(self, plan=None):
        """Install torch (PyTorch extension) then the pip packages; main thread only, after the user confirmed."""
        plan = plan or self.dependencyPlan()
        # an already imported torch stays loaded in this process: an update only takes effect after a restart
        self.restartRequired = self.restartRequired or (plan.torch_action == "upgrade" and "torch" in sys.modules)
        if plan.torch_action != "ok":
            try:
                import PyTorchUtils
            except ImportError as e:
                raise OncoSegError(_("The PyTorch extension is missing"),
                                   hint=_("install 'PyTorch' from the Extensions Manager and restart")) from e
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                  torchVersionRequirement=plan.torch_requirement)
            if torch is None:
                raise OncoSegError(_("PyTorch was not installed"))
            plan = self.dependencyPlan()  # torch now pinned in the constraints
        if plan.pip_args:
            with open(plan.pip_args[-1], "w", encoding="utf-8") as f:
                f.write(plan.constraints_text)
            try:  # newer Slicer: slicer.packaging (progress dialog naming the requester); else util.pip_install(list)
                import slicer.packaging
                pipInstall = getattr(slicer.packaging, "pip_install", None)
            except ImportError:
                pipInstall = None
            if pipInstall is not None:
                pipInstall(plan.pip_args, requester="OncoSeg")
            else:
                slicer.util.pip_install(plan.pip_args)
        return self.dependencyPlan()

    def submitLoadModel(self, model, device="auto", onDone=None, onError=None, onProgress=None):
        return self.worker.submit(lambda cancel, progress: self.core.load_model(model, device), kind="load",
                                  on_done=onDone, on_error=onError, on_progress=onProgress)

    # ----- geometry -----
    def volumeGeometry(self, volumeNode):
        """(RASToIJK 4x4, volume-to-world 4x4, shape (I, J, K)) of a volume node."""
        rasToIjk = vtk.vtkMatrix4x4()
        volumeNode.GetRASToIJKMatrix(rasToIjk)
        toWorld = np.eye(4)
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is not None:
            if not transformNode.IsTransformToWorldLinear():
                raise OncoSegError(_("The input volume is under a non-linear transform"),
                                   hint=_("harden the transform on the volume first"))
            toWorld = slicer.util.arrayFromTransformMatrix(transformNode, toWorld=True)
        dims = volumeNode.GetImageData().GetDimensions()
        return slicer.util.arrayFromVTKMatrix(rasToIjk), toWorld, tuple(int(d) for d in dims)

    def volumeFromNode(self, volumeNode, modality=None, copyVoxels=True):
        """OncoSeg Volume (LPS geometry of the node's own RAS, parent transform not applied) of a volume node."""
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        metadata = {"node": volumeNode.GetName()}
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        tag = shNode.GetItemAttribute(shNode.GetItemByDataNode(volumeNode),
                                      slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName())
        voxels = slicer.util.arrayFromVolume(volumeNode)
        return oncoCore.volume_from_slicer(voxels.copy() if copyVoxels else voxels,
                                           slicer.util.arrayFromVTKMatrix(ijkToRas), modality=tag or None, metadata=metadata)

    def volumeKey(self, volumeNode):
        """Fingerprint of the voxels and geometry the session works on: node ID, image data and its scalars'
        modified times, IJKToRAS. Not the node's own MTime, which renaming, attributes, a parent transform or
        saving change (the session, its objects and embeddings must survive those)."""
        imageData = volumeNode.GetImageData()
        scalars = imageData.GetPointData().GetScalars() if imageData is not None else None
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        return oncoCore.volume_key(volumeNode.GetID(), imageData.GetMTime() if imageData is not None else 0,
                                   scalars.GetMTime() if scalars is not None else 0,
                                   slicer.util.arrayFromVTKMatrix(ijkToRas))

    def detectModality(self, volumeNode):
        try:
            from OncoSegLib.modality import detect_modality

            return detect_modality(self.volumeFromNode(volumeNode))
        except Exception as e:  # detection is advisory
            logging.warning(f"OncoSeg: modality detection failed: {e}")
            return None

    def axisUnderCursor(self, parameterNode):
        """Slicing axis for a new prompt: the user's choice, or the volume axis of the slice view under the mouse."""
        if parameterNode.promptAxis != "auto" or not parameterNode.inputVolume:
            return "axial" if parameterNode.promptAxis == "auto" else parameterNode.promptAxis
        crosshairNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        xyz = [0.0, 0.0, 0.0]
        sliceNode = crosshairNode.GetCursorPositionXYZ(xyz) if crosshairNode else None
        if sliceNode is None:
            return "axial"
        normal = slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())[:3, 2]
        rasToIjk, toWorld, _shape = self.volumeGeometry(parameterNode.inputVolume)
        return oncoGeometry.axis_from_slice_normal(normal, rasToIjk, toWorld)

    # ----- prompt nodes -----
    def definedControlPoints(self, markupsNode):
        """Indices of the control points whose position is defined (not the preview point that follows the mouse)."""
        statuses = [markupsNode.GetNthControlPointPositionStatus(n)
                    for n in range(markupsNode.GetNumberOfControlPoints())]
        return oncoPrompts.defined_indices(statuses, slicer.vtkMRMLMarkupsNode.PositionDefined)

    def ensurePromptNodes(self, parameterNode):
        """Create the markups nodes prompts are placed into (kept in the scene, so saved with it)."""
        specs = (("positivePoints", "vtkMRMLMarkupsFiducialNode", "OncoSeg +", (0.1, 0.8, 0.1)),
                 ("negativePoints", "vtkMRMLMarkupsFiducialNode", "OncoSeg -", (0.9, 0.1, 0.1)),
                 ("boxROI", "vtkMRMLMarkupsROINode", "OncoSeg box", (0.9, 0.8, 0.1)),
                 ("scribble", "vtkMRMLMarkupsCurveNode", "OncoSeg scribble", (0.1, 0.6, 0.9)))
        for attr, className, name, color in specs:
            if getattr(parameterNode, attr) is None:
                node = slicer.mrmlScene.AddNewNodeByClass(className, name)
                node.CreateDefaultDisplayNodes()
                node.GetDisplayNode().SetSelectedColor(color)
                if attr == "scribble":
                    node.SetCurveTypeToLinear()  # the stroke drawn is the polyline the prompt uses
                setattr(parameterNode, attr, node)

    def promptsFromNodes(self, parameterNode):
        """ObjectPrompts (IJK) from the prompt markups of a parameter node."""
        p = parameterNode
        rasToIjk, toWorld, shape = self.volumeGeometry(p.inputVolume)

        def points(node):
            """World positions (N, 3) and recorded axes of the defined control points only."""
            if node is None:
                return None, None
            keep = self.definedControlPoints(node)
            if not keep:
                return None, None
            world = slicer.util.arrayFromMarkupsControlPoints(node, world=True)[keep]
            return world, [node.GetNthControlPointDescription(n) for n in keep]

        posWorld, posAxes = points(p.positivePoints)
        negWorld, negAxes = points(p.negativePoints)
        corners = None
        roi = p.boxROI
        if roi is not None and self.definedControlPoints(roi):
            center, size = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
            roi.GetCenterWorld(center)
            roi.GetSizeWorld(size)
            axes = slicer.util.arrayFromVTKMatrix(roi.GetObjectToWorldMatrix())
            corners = oncoGeometry.roi_corners_world(center, size, axes)
        scribbleWorld, _scribbleAxes = points(p.scribble)  # the stroke: its defined control points, as a polyline
        if scribbleWorld is not None and len(scribbleWorld) < 2:
            scribbleWorld = None
        defaultAxis = "axial" if p.promptAxis == "auto" else p.promptAxis
        return oncoPrompts.prompts_from_markups(p.segmentName, rasToIjk, shape, toWorld, posWorld, posAxes, negWorld,
                                                negAxes, corners, scribbleWorld, None, "", defaultAxis)

    def clearPrompts(self, parameterNode):
        for node in (parameterNode.positivePoints, parameterNode.negativePoints, parameterNode.boxROI,
                     parameterNode.scribble):
            if node is not None:
                node.RemoveAllControlPoints()
        parameterNode.promptsJson = ""
        self.core.forget(parameterNode.segmentName)

    # ----- jobs (main thread prepares, worker runs, main thread writes) -----
    def _modalityFor(self, volume, modality):
        if modality and modality != "auto":
            return modality
        try:
            from OncoSegLib.modality import detect_modality

            guess = detect_modality(volume)
        except Exception as e:  # detection is advisory
            logging.warning(f"OncoSeg: modality detection failed: {e}")
            guess = None
        return oncoParams.resolve_modality("auto", guess.modality if guess else None)

    def _volumeRequest(self, volumeNode, modality, model, device, lowConfidence=None):
        if volumeNode is None:
            raise OncoSegError(_("No input volume"), hint=_("select an input volume"))
        volume = self.volumeFromNode(volumeNode)
        return {"volume": volume, "key": self.volumeKey(volumeNode), "modality": self._modalityFor(volume, modality),
                "model": model, "device": device, "lowConfidence": lowConfidence}

    def promptRequest(self, parameterNode):
        p = parameterNode
        request = self._volumeRequest(p.inputVolume, p.modality, p.model, p.device, p.lowConfidence)
        prompts = self.promptsFromNodes(p)
        if prompts.is_empty():
            raise OncoSegError(_("No prompts placed"), hint=_("place a point, a box or a scribble first"))
        p.promptsJson = prompts.to_json()
        request["prompts"] = prompts
        return request

    def textRequest(self, parameterNode, text):
        p = parameterNode
        request = self._volumeRequest(p.inputVolume, p.modality, p.model, p.device, p.lowConfidence)
        request["text"] = text
        request["axis"] = "axial" if p.promptAxis == "auto" else p.promptAxis
        return request

    def propagateRequest(self, parameterNode):
        p = parameterNode
        request = self._volumeRequest(p.inputVolume, p.modality, p.model, p.device, p.lowConfidence)
        request.update(name=p.segmentName, direction=p.propagateDirection, method=p.propagateMethod)
        return request

    def _prepare(self, request):
        """Worker thread: model and session for the request's volume."""
        self.core.load_model(request["model"], request["device"])
        self.core.set_volume(request["volume"], request["key"], request["modality"])
        if request.get("lowConfidence") is not None:
            self.core.low_threshold = float(request["lowConfidence"])

    def submitPrompts(self, request, dropIfBusy=False, onDone=None, onError=None):
        def job(cancel, progress):
            self._prepare(request)
            return self.core.apply_prompts(request["prompts"], cancel=cancel)

        return self.worker.submit(job, kind="prompt", drop_if_busy=dropIfBusy, on_done=onDone, on_error=onError)

    def submitText(self, request, onDone=None, onError=None):
        def job(cancel, progress):
            self._prepare(request)
            return self.core.segment_text(request["text"], axis=request["axis"], cancel=cancel)

        return self.worker.submit(job, kind="text", on_done=onDone, on_error=onError)

    def submitPropagate(self, request, onDone=None, onError=None, onProgress=None):
        def job(cancel, progress):
            self._prepare(request)
            return self.core.propagate(request["name"], request["direction"], request["method"], progress=progress,
                                       cancel=cancel)

        return self.worker.submit(job, kind="propagate", on_done=onDone, on_error=onError, on_progress=onProgress)

    def cancel(self):
        return self.worker.cancel_all()

    def _wait(self, submit, request):
        """Console use: run a job on the worker thread and wait, keeping Slicer responsive."""
        box = {}
        job = submit(request, onDone=lambda r: box.update(result=r), onError=lambda e: box.update(error=e))
        while job is not None and not job.finished.wait(0.03):
            self.worker.poll()
            slicer.app.processEvents()
        self.worker.poll()
        if "error" in box:
            raise box["error"]
        return box.get("result")

    # ----- writing results (main thread) -----
    def ensureSegmentation(self, volumeNode, segmentationNode=None):
        """The output segmentation: referencing the volume's geometry and placed under the volume's study."""
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                  f"{volumeNode.GetName()} OncoSeg")
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        volumeItem = shNode.GetItemByDataNode(volumeNode)
        studyItem = shNode.GetItemParent(volumeItem)
        if studyItem and studyItem != shNode.GetSceneItemID():
            shNode.SetItemParent(shNode.GetItemByDataNode(segmentationNode), studyItem)
        return segmentationNode

    def _segmentArray(self, segmentationNode, segmentId, volumeNode):
        """(K, J, I) bool voxels of one segment on the volume's grid, read on the same IJK-to-segmentation grid the
        writes use (exact under any linear transforms of the volume and the segmentation; Slicer's
        arrayFromSegmentBinaryLabelmap resamples through world and misreads when their transforms differ)."""
        labelmap = slicer.vtkOrientedImageData()
        if not segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap):
            raise OncoSegError(_("Could not read segment {id}").format(id=segmentId))
        reference = slicer.vtkOrientedImageData()
        reference.SetImageToWorldMatrix(self._ijkToSegmentationMatrix(volumeNode, segmentationNode))
        dims = volumeNode.GetImageData().GetDimensions()  # a volume node's extent starts at 0
        reference.SetExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
        onGrid = slicer.vtkOrientedImageData()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
                labelmap, reference, onGrid, False, False):
            raise OncoSegError(_("Could not read segment {id}").format(id=segmentId))
        values = vtk.util.numpy_support.vtk_to_numpy(onGrid.GetPointData().GetScalars())
        return values.reshape(dims[::-1]) != 0

    def _ijkToSegmentationMatrix(self, volumeNode, segmentationNode):
        """4x4 vtkMatrix4x4: the volume's IJK -> the segmentation node's coordinates (labelmaps live there)."""
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        volumeToSegmentation = vtk.vtkMatrix4x4()
        if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
                volumeNode.GetParentTransformNode(), segmentationNode.GetParentTransformNode(), volumeToSegmentation):
            raise OncoSegError(_("The volume and the segmentation are under different non-linear transforms"),
                               hint=_("harden the transforms or choose a segmentation under the volume's transform"))
        ijkToSegmentation = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Multiply4x4(volumeToSegmentation, ijkToRas, ijkToSegmentation)
        return ijkToSegmentation

    def _writeRegion(self, segmentationNode, volumeNode, update):
        """Write one RegionUpdate (0/1 values in a (k, j, i) box) into its segment, touching only that box.

        Two merge operations (see ``oncoMerge.REGION_WRITE_MODES``): MODE_MERGE_MIN clears the segment's voxels
        where the value is 0, MODE_MERGE_MASK sets them where it is 1, both limited to the box. MODE_REPLACE would
        clear the whole segment when it shares a labelmap layer with other segments.
        """
        image = slicer.vtkOrientedImageData()
        image.SetImageToWorldMatrix(self._ijkToSegmentationMatrix(volumeNode, segmentationNode))
        extent = oncoGeometry.extent_from_bbox(update.bbox)
        image.SetExtent(list(extent))
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        values = vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        values[:] = update.values.astype(np.uint8).ravel()  # (k, j, i) C order = VTK's i-fastest point order
        modes = {"MODE_MERGE_MIN": slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MIN,
                 "MODE_MERGE_MASK": slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MASK}
        for modeName in oncoMerge.REGION_WRITE_MODES:
            if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                    image, segmentationNode, update.segment_id, modes[modeName], extent):
                raise OncoSegError(_("Could not write segment {id}").format(id=update.segment_id))

    def writeResult(self, volumeNode, segmentationNode, result, overwritePolicy="protect", parameterNode=None):
        """Write an ObjectResult into the segment of the same name (created if missing); returns a status line."""
        segmentationNode = self.ensureSegmentation(volumeNode, segmentationNode)
        if parameterNode is not None and parameterNode.segmentation is None:
            parameterNode.segmentation = segmentationNode
        segmentation = segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(result.name)
        if not segmentId:
            segmentId = segmentation.AddEmptySegment("", result.name)
        if overwritePolicy == "overlap":
            segmentation.SeparateSegmentLabelmap(segmentId)
        old = self._segmentArray(segmentationNode, segmentId, volumeNode)
        others = {}
        for n in range(segmentation.GetNumberOfSegments()):
            otherId = segmentation.GetNthSegmentID(n)
            if otherId != segmentId:
                others[otherId] = self._segmentArray(segmentationNode, otherId, volumeNode)
        plan = oncoMerge.plan_segment_write(segmentId, old, result.mask, others, overwritePolicy)
        with slicer.util.RenderBlocker():
            for update in oncoMerge.write_order(plan.updates, segmentId):
                self._writeRegion(segmentationNode, volumeNode, update)
        segment = segmentation.GetSegment(segmentId)
        if parameterNode is not None:
            segment.SetTag("OncoSeg.prompts", parameterNode.promptsJson)
        segment.SetTag("OncoSeg.confidence", "" if result.iou is None else f"{result.iou:.3f}")
        self.undoStack.push(result.name, plan.undo, owner=(segmentationNode, volumeNode))
        message = _("{name}: {ml:.2f} mL").format(name=result.name, ml=result.volume_ml)
        if plan.protected_voxels:
            message += " " + _("({n} voxels kept in other segments)").format(n=plan.protected_voxels)
        return message

    def canUndo(self):
        return len(self.undoStack) > 0

    def undoLastEdit(self, segmentationNode=None):
        """Restore the voxels changed by the last AI edit, in the segmentation that edit was written to.

        ``segmentationNode`` is accepted for compatibility and ignored: the edit's own node is used, so selecting
        another segmentation before pressing Undo cannot write the old voxels into the wrong one.
        """
        owner = self.undoStack.peek_owner()
        record = self.undoStack.pop()
        if record is None:
            return _("Nothing to undo")
        name, updates = record
        editedSegmentation, volumeNode = owner
        if editedSegmentation.GetScene() is None or volumeNode.GetScene() is None:
            raise OncoSegError(_("The segmentation or volume of the last edit was removed from the scene"))
        with slicer.util.RenderBlocker():
            for update in updates:
                self._writeRegion(editedSegmentation, volumeNode, update)
        self.core.forget(name)
        return _("Undid the last edit of {name}").format(name=name)

    # ----- console API -----
    def segment(self, volumeNode, prompts, modality=None, model="latest", segmentationNode=None, name="Segment_1",
                overwritePolicy="protect", device="auto"):
        """Segment one object from prompts; returns the segmentation node.

        ``prompts``: a dict such as ``{"points_ras": [[r, a, s]], "negative": [[i, j, k]], "box_ras": [[...], [...]],
        "axis": "axial"}`` (RAS = world; see ``OncoSegLib.prompts.parse_console_prompts``) or an ObjectPrompts.
        """
        from OncoSegLib.prompts import parse_console_prompts

        stored = parse_console_prompts(prompts, oncoGeometry.NodeGrid(*self.volumeGeometry(volumeNode)), name)
        request = self._volumeRequest(volumeNode, modality, model, device)
        request["prompts"] = stored
        result = self._wait(self.submitPrompts, request)
        segmentationNode = self.ensureSegmentation(volumeNode, segmentationNode)
        self.writeResult(volumeNode, segmentationNode, result, overwritePolicy)
        return segmentationNode

    def segmentText(self, volumeNode, text, modality=None, model="latest", segmentationNode=None, axis="axial",
                    overwritePolicy="protect", device="auto"):
        """Find every instance of ``text`` ("liver", "liver tumor"): one segment per instance."""
        request = self._volumeRequest(volumeNode, modality, model, device)
        request.update(text=text, axis=axis)
        results = self._wait(self.submitText, request)
        segmentationNode = self.ensureSegmentation(volumeNode, segmentationNode)
        for result in results:
            self.writeResult(volumeNode, segmentationNode, result, overwritePolicy)
        return segmentationNode

    def propagate(self, volumeNode, segmentationNode, name="Segment_1", direction="both", method="memory",
                  modality=None, model="latest", overwritePolicy="protect", device="auto"):
        """Propagate an already prompted object through the volume; returns the segmentation node."""
        request = self._volumeRequest(volumeNode, modality, model, device)
        request.update(name=name, direction=direction, method=method)
        result = self._wait(self.submitPropagate, request)
        self.writeResult(volumeNode, segmentationNode, result, overwritePolicy)
        return segmentationNode

    # ----- export -----
    def labelMap(self, segmentationNode, volumeNode):
        """(labels (K, J, I) on the volume grid, names, colours 0-255) of all segments in segment order; where
        segments overlap the later segment wins (the project's one rule, OncoSegLib.export.overlap)."""
        from OncoSegLib.export.overlap import label_map_from_masks

        segmentation = segmentationNode.GetSegmentation()
        ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
        if not ids:
            raise OncoSegError(_("The segmentation is empty"), hint=_("segment something first"))
        labels = label_map_from_masks([self._segmentArray(segmentationNode, i, volumeNode) for i in ids])
        segments = [segmentation.GetSegment(i) for i in ids]
        return (labels, [s.GetName() for s in segments],
                [tuple(int(round(255 * c)) for c in s.GetColor()) for s in segments])

    def dicomSeriesFiles(self, volumeNode):
        """Files of the ORIGINAL DICOM series the volume was loaded from (empty when not from the database)."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        seriesUid = shNode.GetItemUID(shNode.GetItemByDataNode(volumeNode),
                                      slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName())
        if not seriesUid or not slicer.dicomDatabase:
            return []
        return list(slicer.dicomDatabase.filesForSeries(seriesUid))

    def _referenceSeries(self, volumeNode, seriesFolder=None):
        from OncoSegLib.export.reference import load_reference

        if seriesFolder:
            return load_reference(seriesFolder), None
        folder = oncoCore.series_folder_from_files(self.dicomSeriesFiles(volumeNode), slicer.app.temporaryPath)
        return load_reference(folder), folder

    def _onSeriesGrid(self, segmentationNode, volumeNode, reference):
        """The label map re-indexed onto the DICOM series grid (exact permutation/flip only, never resampled)."""
        from OncoSegLib.export.labelmap_io import array_index_to_lps, place_on_grid

        labels, names, colors = self.labelMap(segmentationNode, volumeNode)
        grid = array_index_to_lps(self.volumeFromNode(volumeNode, copyVoxels=False))
        return place_on_grid(labels, grid, reference.volume(), what="segmentation"), names, colors

    def exportRTStruct(self, segmentationNode, volumeNode, outDir, seriesFolder=None, useSlicerRT=True):
        """Write RTSTRUCT(s) into ``outDir``; returns the written paths.

        Always: OncoSeg's own writer referencing the ORIGINAL series (from Slicer's DICOM database, or
        ``seriesFolder``). Also, when SlicerRT is installed: its DICOM-RT exporter (image + structures as one new
        study export, in ``outDir/SlicerRT``).
        """
        import shutil

        from OncoSegLib.export.rtstruct import write_rtstruct

        paths = []
        reference, tmp = self._referenceSeries(volumeNode, seriesFolder)
        try:
            labels, names, colors = self._onSeriesGrid(segmentationNode, volumeNode, reference)
            out = os.path.join(outDir, f"RTSTRUCT_{reference.first.SeriesInstanceUID}.dcm")
            paths.append(str(write_rtstruct(labels, reference, out, names=names, colors=colors, overwrite=False)))
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        if useSlicerRT and hasattr(slicer.modules, "dicomrtimportexport"):
            paths.append(self.exportWithSlicerRT(segmentationNode, volumeNode, os.path.join(outDir, "SlicerRT")))
        return paths

    def exportWithSlicerRT(self, segmentationNode, volumeNode, outDir):
        """SlicerRT's exporter: volume and segmentation exported together under one study."""
        import DicomRtImportExportPlugin

        os.makedirs(outDir, exist_ok=True)
        self.ensureSegmentation(volumeNode, segmentationNode)
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        volumeItem = shNode.GetItemByDataNode(volumeNode)
        if shNode.GetItemParent(volumeItem) == shNode.GetSceneItemID():  # not in a study: make one
            patientItem = shNode.CreateSubjectItem(shNode.GetSceneItemID(), "OncoSeg patient")
            studyItem = shNode.CreateStudyItem(patientItem, "OncoSeg study")
            shNode.SetItemParent(volumeItem, studyItem)
            shNode.SetItemParent(shNode.GetItemByDataNode(segmentationNode), studyItem)
        exporter = DicomRtImportExportPlugin.DicomRtImportExportPluginClass()
        exportables = (exporter.examineForExport(volumeItem)
                       + exporter.examineForExport(shNode.GetItemByDataNode(segmentationNode)))
        # what Slicer's DICOM export dialog does before exporting: patient/study/series tags from Subject Hierarchy
        # (without it the new study has no patient name/ID and SlicerRT writes any volume as Modality CT)
        studyItem = shNode.GetItemParent(volumeItem)
        patientItem = shNode.GetItemParent(studyItem)

        def attributes(itemId, tagNames):
            return {t: shNode.GetItemAttribute(itemId, oncoDicomTags.attribute_name(t)) for t in tagNames}

        patient = attributes(patientItem, oncoDicomTags.PATIENT_TAGS)
        study = attributes(studyItem, oncoDicomTags.STUDY_TAGS)
        for exportable in exportables:
            exportable.directory = outDir
            offered = {t: exportable.tag(t) for t in oncoDicomTags.SERIES_TAGS if exportable.tag(t)}
            series = attributes(exportable.subjectHierarchyItemID, oncoDicomTags.SERIES_TAGS)
            for tagName, value in oncoDicomTags.exportable_tags(patient, study, series, offered).items():
                exportable.setTag(tagName, value)
        error = exporter.export(exportables)
        if error:
            raise OncoSegError(_("SlicerRT export failed: {error}").format(error=error))
        return outDir

    def exportSEG(self, segmentationNode, volumeNode, outDir, seriesFolder=None):
        """DICOM SEG referencing the original series; returns the path."""
        import shutil

        from OncoSegLib.export.seg import write_seg

        reference, tmp = self._referenceSeries(volumeNode, seriesFolder)
        try:
            labels, names, colors = self._onSeriesGrid(segmentationNode, volumeNode, reference)
            out = os.path.join(outDir, f"SEG_{reference.first.SeriesInstanceUID}.dcm")
            return str(write_seg(labels, reference, out, names=names, colors=colors, overwrite=False))
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def exportNIfTI(self, segmentationNode, volumeNode, outDir):
        """Label map NIfTI (exact affine of the volume) + a names/colours JSON; returns the NIfTI path."""
        import json

        from OncoSegLib.io.atomic import atomic_write_text
        from OncoSegLib.io.nifti import write_nifti

        labels, names, colors = self.labelMap(segmentationNode, volumeNode)
        volume = self.volumeFromNode(volumeNode)
        base = os.path.join(outDir, f"{segmentationNode.GetName()}")
        path = write_nifti(volume.with_array(labels), base + ".nii.gz")
        atomic_write_text(base + ".labels.json", json.dumps(
            [{"label": n + 1, "name": name, "color": list(color)} for n, (name, color) in enumerate(zip(names, colors))],
            indent=2))
        return str(path)


#
# OncoSegTest
#


class OncoSegTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (and in pytest on real MRML): geometry and parameters, then the shipped demo model segments
    a phantom vertebra into a segmentation node, Undo, and an RTSTRUCT round trip. FAILS (never skips) when PyTorch
    or transformers are missing or the model returns an empty or wrong mask: a pass means the module works here."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_geometryAndParameters()
        self.setUp()
        self.test_segmentAndExport()

    def test_geometryAndParameters(self):
        self.delayDisplay("Geometry and parameter node")
        ijkToRas = np.array([[0.0, 0.0, -2.0, 10.0], [-0.8, 0.0, 0.0, 5.0], [0.0, 1.5, 0.0, -3.0], [0, 0, 0, 1]])
        volumeNode = slicer.util.addVolumeFromArray(np.zeros((8, 10, 12), np.int16), ijkToRAS=ijkToRas, name="oblique")
        logic = OncoSegLogic()
        parameterNode = logic.getParameterNode()
        parameterNode.inputVolume = volumeNode
        logic.ensurePromptNodes(parameterNode)
        world = np.array([3.0, 4.0, 5.0, 1.0]) @ ijkToRas.T
        parameterNode.positivePoints.AddControlPointWorld(vtk.vtkVector3d(*world[:3]))
        prompts = logic.promptsFromNodes(parameterNode)
        self.assertEqual(prompts.points[0].ijk, (3, 4, 5))
        self.assertTrue(prompts.points[0].positive)
        parameterNode.modality = "mri"
        parameterNode.promptsJson = prompts.to_json()
        again = logic.getParameterNode()
        self.assertEqual(again.modality, "mri")
        self.assertEqual(type(prompts).from_json(again.promptsJson), prompts)

    def test_segmentAndExport(self):
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as e:
            self.fail(f"OncoSeg needs PyTorch and transformers ({e}): press 'Install' in the OncoSeg module")
        from OncoSegLib.demo import DEMO_MODEL_DIR, DEMO_SPACING
        from OncoSegLib.export.rtstruct import read_rtstruct
        from OncoSegLib.io.dicom_write import write_dicom_series
        from OncoSegLib.phantoms import make_ct_phantom

        self.delayDisplay("Segment a phantom vertebra with the shipped demo model")
        phantom = make_ct_phantom(seed=5, shape_kji=(12, 128, 128), spacing=DEMO_SPACING)
        volume, truth = phantom.volume, phantom.labels == 4  # label 4: vertebra
        ijkToRas = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.ijk_to_lps
        volumeNode = slicer.util.addVolumeFromArray(volume.array.astype(np.int16), ijkToRAS=ijkToRas, name="OncoSegCT")
        k = volume.shape_kji[0] // 2
        jj, ii = np.nonzero(truth[k])
        click = [int(np.median(ii)), int(np.median(jj)), k]
        logic = OncoSegLogic()
        segmentationNode = logic.segment(volumeNode, {"points": [click]}, modality="ct", model=str(DEMO_MODEL_DIR),
                                         name="vertebra", device="cpu")
        segmentId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("vertebra")
        self.assertTrue(segmentId)
        mask = logic._segmentArray(segmentationNode, segmentId, volumeNode)
        self.assertEqual(mask.shape, volume.shape_kji)
        written = int(mask.sum())
        self.assertGreater(written, 0, "the model returned an empty mask")
        self.assertEqual(written, int(logic.core.session.result(logic.core.object_id("vertebra")).sum()))
        dice = 2.0 * float((mask[k] & truth[k]).sum()) / float(mask[k].sum() + truth[k].sum())
        self.assertGreater(dice, 0.8, f"vertebra Dice {dice:.3f} on the clicked slice")
        self.delayDisplay("Undo restores the empty segment")
        logic.undoLastEdit()
        self.assertEqual(int(logic._segmentArray(segmentationNode, segmentId, volumeNode).sum()), 0)
        logic.segment(volumeNode, {"points": [click]}, modality="ct", model=str(DEMO_MODEL_DIR), name="vertebra",
                      segmentationNode=segmentationNode, device="cpu")
        self.delayDisplay("RTSTRUCT export round trip")
        outDir = tempfile.mkdtemp(prefix="OncoSegTest-", dir=slicer.app.temporaryPath)
        seriesDir = os.path.join(outDir, "ct")
        write_dicom_series(volume, seriesDir)
        paths = logic.exportRTStruct(segmentationNode, volumeNode, outDir, seriesFolder=seriesDir, useSlicerRT=False)
        labels, _rois = read_rtstruct(paths[0], seriesDir)
        self.assertEqual(int((labels > 0).sum()), written)
        self.delayDisplay("Test passed")
