"""OncoSeg: SAM3 + LoRA segmentation of tumours and organs in 3D Slicer (points, boxes, scribbles, text, propagation).

Thin glue only: every decision lives in ``OncoSegLib.slicer_support`` (pure Python, tested with pytest); the MRML
calls that read nodes into numpy and write results back (main thread) live in the module's helper package
``OncoSegModuleLib`` beside this file. This file wires the panel and hands work to the single model worker thread.
"""

import logging
import os
import shutil
import sys
from typing import Annotated

import numpy as np

import qt
import slicer
import vtk
from slicer import (vtkMRMLMarkupsCurveNode, vtkMRMLMarkupsFiducialNode, vtkMRMLMarkupsROINode,
                    vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


def _ensureOncoSegLib():
    """Make OncoSegLib importable: installed beside this file, or in the clone root ("Add module path"); and this
    module's own helper package OncoSegModuleLib (beside this file; Slicer puts module folders on sys.path)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.append(here)
    for candidate in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(candidate, "OncoSegLib")) and candidate not in sys.path:
            sys.path.insert(0, candidate)
            break


_ensureOncoSegLib()

from OncoSegLib.errors import Cancelled, OncoSegError  # noqa: E402
from OncoSegLib.slicer_support import core as oncoCore  # noqa: E402
from OncoSegLib.slicer_support import dependencies as oncoDeps  # noqa: E402
from OncoSegLib.slicer_support import engine as oncoEngine  # noqa: E402
from OncoSegLib.slicer_support import geometry as oncoGeometry  # noqa: E402
from OncoSegLib.slicer_support import jobs as oncoJobs  # noqa: E402
from OncoSegLib.slicer_support import merge as oncoMerge  # noqa: E402
from OncoSegLib.slicer_support import params as oncoParams  # noqa: E402
from OncoSegLib.slicer_support import selftest as oncoSelfTest  # noqa: E402
from OncoSegModuleLib import exports as moduleExports  # noqa: E402
from OncoSegModuleLib import markups as moduleMarkups  # noqa: E402
from OncoSegModuleLib import mrml_segments as moduleSegments  # noqa: E402
from OncoSegModuleLib import volumes as moduleVolumes  # noqa: E402
from OncoSegModuleLib.panels import DependencyPanelMixin, MeasurementsPanelMixin  # noqa: E402

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
    propagateMethod: Annotated[str, Choice(list(oncoParams.METHOD_CHOICES))] = "auto"
    overwritePolicy: Annotated[str, Choice(list(oncoParams.OVERWRITE_CHOICES))] = "protect"
    promptAxis: Annotated[str, Choice(list(oncoParams.AXIS_CHOICES))] = "auto"
    lowConfidence: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    autoRun: bool = True
    promptsJson: str = ""


# One model, one worker thread and one undo stack for the whole application (OncoSegLib.slicer_support.engine)
sharedEngine = oncoEngine.shared_engine
shutdownEngine = oncoEngine.shutdown_engine


#
# OncoSegWidget
#


class OncoSegWidget(DependencyPanelMixin, MeasurementsPanelMixin, ScriptedLoadableModuleWidget,
                    VTKObservationMixin):
    """The panel; dependency install and the measurements table come from OncoSegModuleLib.panels."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedMarkups = []
        self._pollTimer = None
        self._shortcuts = []
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
        self.ui.exportRTButton.connect("clicked(bool)", lambda: self.onExport("rtstruct"))
        self.ui.exportSEGButton.connect("clicked(bool)", lambda: self.onExport("seg"))
        self.ui.exportNIfTIButton.connect("clicked(bool)", lambda: self.onExport("nifti"))
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        # keyboard shortcuts (oncoParams.SHORTCUTS), active while the module panel is shown
        actions = {"positive": lambda: self.ui.positivePlaceWidget.setPlaceModeEnabled(True),
                   "negative": lambda: self.ui.negativePlaceWidget.setPlaceModeEnabled(True),
                   "box": lambda: self.ui.boxPlaceWidget.setPlaceModeEnabled(True),
                   "next_segment": self.onNextSegment, "undo": self.onUndo}
        for action, keys in oncoParams.SHORTCUTS.items():
            self._shortcut = qt.QShortcut(qt.QKeySequence(keys), self.parent)
            self._shortcut.connect("activated()", actions[action])
            self._shortcuts.append(self._shortcut)

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
        for shortcut in self._shortcuts:
            shortcut.setEnabled(False)
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
        guess = self.logic.detectModality(node) if node is not None else None
        self.ui.modalityReasonLabel.text = "" if node is None else oncoParams.modality_status(
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
            self.runJob("prompt", interactive=True)

    def onNextSegment(self) -> None:
        """Shift+N: start the next segment (Segment_1 -> Segment_2); the prompts of the finished one are cleared."""
        p = self._parameterNode
        names = self.logic.segmentNames(p.segmentation)
        self.logic.clearPrompts(p)
        p.segmentName = oncoParams.next_segment_name(names, p.segmentName)
        self.ui.statusLabel.text = _("Now segmenting {name}").format(name=p.segmentName)

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
        advice = self.logic.modelAdvice(p.model, p.device)
        if advice.suggested and slicer.util.confirmYesNoDisplay(
                advice.message + "\n\n" + _("Use {model} instead?").format(model=advice.suggested),
                windowTitle=_("OncoSeg model")):
            self.ui.modelComboBox.setCurrentText(advice.suggested)
        self.ui.modelStatusLabel.text = advice.message
        self.setBusy(True, _("Loading model {model} (downloads on first use)...").format(model=p.model))
        self.logic.submitLoadModel(p.model, p.device, onDone=self.onModelLoaded, onError=self.showError,
                                   onProgress=self.onProgress)

    def onModelLoaded(self, status) -> None:
        self.setBusy(False)
        self.ui.modelStatusLabel.text = status  # model, device and memory

    # ----- prompts -----
    def runJob(self, kind, interactive=False) -> None:
        """Start a panel action on the worker: "prompt" (clicks made while a job runs are dropped), "text" or
        "propagate" (progress bar, Cancel keeps the slices done)."""
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        try:
            request = self.logic.parameterRequest(p, kind)
        except OncoSegError as e:
            self.showError(e)
            return
        job = self.logic.submit(request, dropIfBusy=interactive, onError=self.showError, onProgress=self.onProgress,
                                onDone=self.onTextResults if kind == "text" else self.onResult)
        if job is not None:
            self.setBusy(True, {"text": _("Finding '{text}'...").format(text=p.textPrompt),
                                "propagate": _("Propagating {name}...").format(name=p.segmentName)}.get(
                kind, _("Segmenting {name}...").format(name=p.segmentName)))

    def onSegment(self) -> None:
        self.runJob("prompt")

    def onSegmentText(self) -> None:
        self.runJob("text")

    def onPropagate(self) -> None:
        self.runJob("propagate")

    def onCancel(self) -> None:
        self.logic.cancel()
        self.ui.statusLabel.text = _("Cancelling (partial results are kept)...")

    # onResult/onTextResults are called by worker.poll() from onPoll, whose handler shows any error once
    # (slicer.util.tryWithErrorDisplay here would show a dialog and re-raise into a second one).
    def onResult(self, result) -> None:
        self.onTextResults([result])
        self.ui.statusLabel.text = self.logic.lastMessage

    def onTextResults(self, results) -> None:
        self.setBusy(False)
        p = self._parameterNode
        for result in results:
            self.logic.writeResult(p.inputVolume, p.segmentation, result, p.overwritePolicy, parameterNode=p)
        self.showMeasurements(results)
        self.ui.statusLabel.text = _("{n} instance(s) found").format(n=len(results))

    def onUndo(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Undo failed."), waitCursor=True):
            self.ui.statusLabel.text = self.logic.undoLastEdit()
        self.updateButtons()

    def onClearPrompts(self) -> None:
        self.logic.clearPrompts(self._parameterNode)

    # ----- export -----
    def onExport(self, kind) -> None:
        outDir = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export folder"))
        if outDir:
            with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
                p = self._parameterNode
                paths = self.logic.export(kind, p.segmentation, p.inputVolume, outDir)
                self.ui.statusLabel.text = _("Exported: {paths}").format(paths=", ".join(paths))


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
        self.lastMessage = ""

    def getParameterNode(self):
        return OncoSegParameterNode(super().getParameterNode())

    # ----- models and dependencies -----
    def modelNames(self):
        return oncoEngine.model_names()

    def importModel(self, path, name=None):
        from OncoSegLib.models.registry import import_model

        return import_model(path, name=name).name

    def modelAdvice(self, model, device="auto"):
        """CPU-mode / missing-weights message and the CPU model to offer (oncoParams.model_advice)."""
        return oncoParams.advise(model, device)

    def dependencyPlan(self):
        constraints = os.path.join(slicer.app.temporaryPath, "OncoSeg-constraints.txt")
        return oncoDeps.plan_install(oncoDeps.installed_versions(), constraints)

    def installTorch(self, plan):
        """torch through the PyTorch extension (main thread); returns the new plan (torch now pinned in it)."""
        self.restartRequired = oncoDeps.install_torch(plan) or self.restartRequired
        return self.dependencyPlan() if plan.torch_action != "ok" else plan

    def submitInstall(self, plan, onDone=None, onError=None, onProgress=None):
        """pip in a child process of Slicer's Python, on the worker thread: progress per package, Cancel kills pip.
        Slicer's own packages are pinned by the plan's constraints file, never upgraded."""
        job = oncoDeps.install_job(plan, shutil.which("PythonSlicer") or sys.executable)
        return self.worker.submit(job, kind="install", on_done=onDone, on_error=onError, on_progress=onProgress)

    def submitLoadModel(self, model, device="auto", onDone=None, onError=None, onProgress=None):
        def job(cancel, progress):
            cancel.raise_if_cancelled()  # cancelled while queued: not loaded
            progress(0, 1, _("Loading {model}...").format(model=model))
            return self.core.load_model(model, device)

        return self.worker.submit(job, kind="load", on_done=onDone, on_error=onError, on_progress=onProgress)

    # ----- geometry (OncoSegModuleLib.volumes) -----
    def volumeGeometry(self, volumeNode):
        """(RASToIJK 4x4, volume-to-world 4x4, shape (I, J, K)) of a volume node."""
        return moduleVolumes.volume_geometry(volumeNode)

    def volumeFromNode(self, volumeNode, copyVoxels=True):
        """OncoSeg Volume (LPS geometry of the node's own RAS, parent transform not applied) of a volume node."""
        return moduleVolumes.volume_from_node(volumeNode, copyVoxels)

    def volumeKey(self, volumeNode):
        """Session key from the image data and geometry (survives renames, attributes, transforms, saving)."""
        return moduleVolumes.volume_key(volumeNode)

    def detectModality(self, volumeNode):
        """The detected modality guess of a volume node (advisory: None when detection fails)."""
        try:
            from OncoSegLib.modality import detect_modality

            return detect_modality(self.volumeFromNode(volumeNode, copyVoxels=False))
        except Exception as e:  # detection is advisory
            logging.warning(f"OncoSeg: modality detection failed: {e}")
            return None

    # ----- prompt nodes (OncoSegModuleLib.markups) -----
    def axisUnderCursor(self, parameterNode):
        """Slicing axis for a new prompt: the user's choice, or the volume axis of the slice view under the mouse."""
        return moduleMarkups.axis_under_cursor(parameterNode)

    def definedControlPoints(self, markupsNode):
        """Indices of the control points whose position is defined (not the preview point that follows the mouse)."""
        return moduleMarkups.defined_control_points(markupsNode)

    def ensurePromptNodes(self, parameterNode):
        """Create the markups nodes prompts are placed into (kept in the scene, so saved with it)."""
        moduleMarkups.ensure_prompt_nodes(parameterNode)

    def promptsFromNodes(self, parameterNode):
        """ObjectPrompts (IJK) from the prompt markups of a parameter node (defined control points only)."""
        return moduleMarkups.prompts_from_nodes(parameterNode)

    def clearPrompts(self, parameterNode):
        moduleMarkups.clear_prompt_nodes(parameterNode)
        parameterNode.promptsJson = ""
        self.core.forget(parameterNode.segmentName)

    # ----- jobs (main thread prepares, worker runs, main thread writes) -----
    def _request(self, kind, volumeNode, modality, model, device, lowConfidence=None, **what):
        if volumeNode is None:
            raise OncoSegError(_("No input volume"), hint=_("select an input volume"))
        if not modality or modality == "auto":
            guess = self.detectModality(volumeNode)
            modality = oncoParams.resolve_modality("auto", guess.modality if guess else None)
        return oncoJobs.Request(kind, self.volumeFromNode(volumeNode), self.volumeKey(volumeNode), modality, model,
                                device, lowConfidence, **what)

    def parameterRequest(self, parameterNode, kind):
        """The Request of a panel action ("prompt", "text", "propagate") from the parameter node's settings."""
        p = parameterNode
        what = {"text": dict(text=p.textPrompt, axis="axial" if p.promptAxis == "auto" else p.promptAxis),
                "propagate": dict(name=p.segmentName, direction=p.propagateDirection, method=p.propagateMethod),
                }.get(kind, {})
        if kind == "prompt":
            what["prompts"] = self.promptsFromNodes(p)
            if what["prompts"].is_empty():
                raise OncoSegError(_("No prompts placed"), hint=_("place a point, a box or a scribble first"))
            p.promptsJson = what["prompts"].to_json()
        return self._request(kind, p.inputVolume, p.modality, p.model, p.device, p.lowConfidence, **what)

    def submit(self, request, dropIfBusy=False, onDone=None, onError=None, onProgress=None):
        """Queue a Request on the worker; None when ``dropIfBusy`` and a job is running (clicks are dropped)."""
        return self.worker.submit(lambda cancel, progress: oncoJobs.run(self.core, request, cancel, progress),
                                  kind=request.kind, drop_if_busy=dropIfBusy, on_done=onDone, on_error=onError,
                                  on_progress=onProgress)

    def run(self, request):
        """Console use: run a Request on the worker thread and wait, keeping Slicer responsive."""
        return self.worker.run_sync(lambda cancel, progress: oncoJobs.run(self.core, request, cancel, progress),
                                    kind=request.kind, pump=slicer.app.processEvents)

    def cancel(self):
        return self.worker.cancel_all()

    # ----- writing results (main thread; OncoSegModuleLib.mrml_segments) -----
    def ensureSegmentation(self, volumeNode, segmentationNode=None):
        """The output segmentation: referencing the volume's geometry and placed under the volume's study."""
        return moduleSegments.ensure_segmentation(volumeNode, segmentationNode)

    def segmentNames(self, segmentationNode):
        return moduleSegments.segment_names(segmentationNode)

    def _segmentArray(self, segmentationNode, segmentId, volumeNode):
        """(K, J, I) bool voxels of one segment on the volume's grid (exact under any linear transforms)."""
        return moduleSegments.segment_array(segmentationNode, segmentId, volumeNode)

    def writeResult(self, volumeNode, segmentationNode, result, overwritePolicy="protect", parameterNode=None):
        """Write an ObjectResult into the segment of the same name (created if missing); returns a status line."""
        segmentationNode = self.ensureSegmentation(volumeNode, segmentationNode)
        if parameterNode is not None and parameterNode.segmentation is None:
            parameterNode.segmentation = segmentationNode
        segmentation = segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(result.name) or segmentation.AddEmptySegment("", result.name)
        if overwritePolicy == "overlap":
            segmentation.SeparateSegmentLabelmap(segmentId)
        ids = moduleSegments.segment_ids(segmentationNode)
        others = {i: self._segmentArray(segmentationNode, i, volumeNode) for i in ids if i != segmentId}
        plan = oncoMerge.plan_segment_write(segmentId, self._segmentArray(segmentationNode, segmentId, volumeNode),
                                            result.mask, others, overwritePolicy)
        with slicer.util.RenderBlocker():
            for update in oncoMerge.write_order(plan.updates, segmentId):
                moduleSegments.write_region(segmentationNode, volumeNode, update)
        segment = segmentation.GetSegment(segmentId)
        if parameterNode is not None:
            segment.SetTag("OncoSeg.prompts", parameterNode.promptsJson)
        segment.SetTag("OncoSeg.confidence", "" if result.iou is None else f"{result.iou:.3f}")
        self.undoStack.push(result.name, plan.undo, owner=(segmentationNode, volumeNode))
        message = _("{name}: {ml:.2f} mL").format(name=result.name, ml=result.volume_ml)
        if plan.protected_voxels:
            message += " " + _("({n} voxels kept in other segments)").format(n=plan.protected_voxels)
        self.lastMessage = message
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
                moduleSegments.write_region(editedSegmentation, volumeNode, update)
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

        prompts = parse_console_prompts(prompts, oncoGeometry.NodeGrid(*self.volumeGeometry(volumeNode)), name)
        result = self.run(self._request("prompt", volumeNode, modality, model, device, prompts=prompts))
        segmentationNode = self.ensureSegmentation(volumeNode, segmentationNode)
        self.writeResult(volumeNode, segmentationNode, result, overwritePolicy)
        return segmentationNode

    def segmentText(self, volumeNode, text, modality=None, model="latest", segmentationNode=None, axis="axial",
                    overwritePolicy="protect", device="auto"):
        """Find every instance of ``text`` ("liver", "liver tumor"): one segment per instance."""
        results = self.run(self._request("text", volumeNode, modality, model, device, text=text, axis=axis))
        segmentationNode = self.ensureSegmentation(volumeNode, segmentationNode)
        for result in results:
            self.writeResult(volumeNode, segmentationNode, result, overwritePolicy)
        return segmentationNode

    def propagate(self, volumeNode, segmentationNode, name="Segment_1", direction="both", method="auto",
                  modality=None, model="latest", overwritePolicy="protect", device="auto"):
        """Propagate an already prompted object through the volume; returns the segmentation node."""
        result = self.run(self._request("propagate", volumeNode, modality, model, device, name=name,
                                        direction=direction, method=method))
        self.writeResult(volumeNode, segmentationNode, result, overwritePolicy)
        return segmentationNode

    # ----- export (OncoSegModuleLib.exports) -----
    def labelMap(self, segmentationNode, volumeNode):
        """(labels (K, J, I) on the volume grid, names, colours 0-255); overlaps: the later segment wins."""
        return moduleExports.label_map(segmentationNode, volumeNode)

    def export(self, kind, segmentationNode, volumeNode, outDir, seriesFolder=None, useSlicerRT=True):
        """Write "rtstruct", "seg" or "nifti" into ``outDir``; returns the written paths.

        RTSTRUCT and SEG reference the ORIGINAL series (Slicer's DICOM database, or ``seriesFolder``); RTSTRUCT is
        OncoSeg's own writer, plus SlicerRT's exporter into ``outDir/SlicerRT`` when SlicerRT is installed.
        """
        return moduleExports.export(kind, segmentationNode, volumeNode, outDir, seriesFolder, useSlicerRT)

    def exportRTStruct(self, segmentationNode, volumeNode, outDir, seriesFolder=None, useSlicerRT=True):
        return self.export("rtstruct", segmentationNode, volumeNode, outDir, seriesFolder, useSlicerRT)

    def exportSEG(self, segmentationNode, volumeNode, outDir, seriesFolder=None):
        return self.export("seg", segmentationNode, volumeNode, outDir, seriesFolder)[0]

    def exportNIfTI(self, segmentationNode, volumeNode, outDir):
        return self.export("nifti", segmentationNode, volumeNode, outDir)[0]

    def exportWithSlicerRT(self, segmentationNode, volumeNode, outDir):
        """SlicerRT's exporter: volume and segmentation exported together under one study."""
        return moduleExports.export_with_slicer_rt(segmentationNode, volumeNode, outDir)


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
        self.delayDisplay("Segment a phantom vertebra with the shipped demo model, Undo, RTSTRUCT round trip")
        oncoSelfTest.segment_and_export(self, OncoSegLogic(), lambda array, ijkToRas: slicer.util.addVolumeFromArray(
            array, ijkToRAS=ijkToRas, name="OncoSegCT"), slicer.app.temporaryPath)
        self.delayDisplay("Test passed")
