"""Widget glue that is not node wiring: dependency install from the panel and the measurements table.

``DependencyPanelMixin`` and ``MeasurementsPanelMixin`` are mixed into OncoSegWidget; they use the widget's
``self.ui`` (widgets of Resources/UI/OncoSeg.ui), ``self.logic`` (OncoSegLogic), ``setBusy``, ``showError`` and
``onProgress``.
"""

from __future__ import annotations

from typing import Any

import qt
import slicer
from slicer.i18n import tr as _


class DependencyPanelMixin:
    """Install status label, Install button, and the check made before any model work."""

    def updateDependencyStatus(self) -> None:
        plan = self.logic.dependencyPlan()
        self.ui.dependencyLabel.text = plan.blocked or (_("All dependencies installed") if plan.nothing_to_do
                                                        else _("Dependencies missing: press Install"))
        self.ui.dependencyLabel.toolTip = plan.summary()

    def ensureDependencies(self) -> bool:
        """True when everything is installed; else starts the install dialog and returns False (the install runs
        in the background; the user presses the button again when it is done)."""
        plan = self.logic.dependencyPlan()
        if plan.nothing_to_do and not plan.blocked:
            return True
        self.onInstallDependencies()
        return False

    def onInstallDependencies(self) -> None:
        plan = self.logic.dependencyPlan()
        if plan.blocked or plan.nothing_to_do:
            slicer.util.infoDisplay(plan.summary(), windowTitle=_("OncoSeg dependencies"))
            return
        if not slicer.util.confirmOkCancelDisplay(
                _("OncoSeg needs to install Python packages (this takes a few minutes):") + "\n\n" + plan.summary(),
                windowTitle=_("OncoSeg dependencies")):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to install PyTorch."), waitCursor=True):
            plan = self.logic.installTorch(plan)  # the PyTorch extension's own installer (main thread)
        self.setBusy(True, _("Installing Python packages (Cancel stops pip)..."))
        self.logic.submitInstall(plan, onDone=self.onInstalled, onError=self.showError, onProgress=self.onProgress)

    def onInstalled(self, plan: Any) -> None:
        self.setBusy(False, _("Dependencies installed"))
        self.updateDependencyStatus()
        if self.logic.restartRequired and slicer.util.confirmYesNoDisplay(
                _("PyTorch was updated. Restart Slicer now to use it?"), windowTitle=_("OncoSeg dependencies")):
            slicer.util.restart()


class MeasurementsPanelMixin:
    """The measurements table (one row per segment, low-confidence rows highlighted) and the confidence label."""

    def showMeasurements(self, results: list) -> None:
        table = self.ui.measurementsTable
        for result in results:
            names = [table.item(r, 0).text() if table.item(r, 0) else "" for r in range(table.rowCount)]
            rowIndex = names.index(result.name) if result.name in names else table.rowCount
            table.setRowCount(max(table.rowCount, rowIndex + 1))
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
