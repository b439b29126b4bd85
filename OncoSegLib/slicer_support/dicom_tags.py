"""DICOM tags for exporting through Slicer's DICOM plugins (SlicerRT's RTSTRUCT exporter) from a script.

When a user exports with Slicer's DICOM export dialog, its tag editor copies the patient's and the study's
``DICOM.*`` attributes from Subject Hierarchy into every exportable, and overrides the plugin's default series tags
(e.g. SlicerRT offers ``Modality = CT`` for any volume) with the series' own attributes (Slicer/Slicer
``Modules/Scripted/DICOMLib/Widgets/qSlicerDICOMTagEditorWidget.cxx``). A script calling
``plugin.export(exportables)`` gets none of that: the exported study would lose the patient's name and ID and an MR
would be written as CT. The module reads the attributes named here and sets the tags this function returns.

Tag names are those of ``vtkMRMLSubjectHierarchyConstants`` (``GetDICOMPatientTagNames``,
``GetDICOMStudyTagNames``); Subject Hierarchy stores each as an item attribute ``"DICOM." + name``.
Values are passed through untouched and never logged (they are patient data).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

#: ``vtkMRMLSubjectHierarchyConstants::GetDICOMAttributePrefix()``
ATTRIBUTE_PREFIX = "DICOM."
#: ``vtkMRMLSubjectHierarchyConstants::GetDICOMPatientTagNames()``
PATIENT_TAGS: tuple[str, ...] = ("PatientName", "PatientID", "PatientSex", "PatientBirthDate", "PatientComments")
#: ``vtkMRMLSubjectHierarchyConstants::GetDICOMStudyTagNames()``
STUDY_TAGS: tuple[str, ...] = ("StudyInstanceUID", "StudyID", "StudyDescription", "StudyDate", "StudyTime")
#: series tags SlicerRT's ``DicomRtImportExportPlugin.examineForExport`` offers (overridden from the series item)
SERIES_TAGS: tuple[str, ...] = ("Modality", "Manufacturer", "Model", "SeriesDescription", "SeriesNumber")


def attribute_name(tag: str) -> str:
    """Subject Hierarchy attribute holding DICOM tag ``tag`` ("PatientName" -> "DICOM.PatientName")."""
    return ATTRIBUTE_PREFIX + tag


def exportable_tags(patient: Mapping[str, str | None], study: Mapping[str, str | None],
                    series: Mapping[str, str | None], offered: Mapping[str, str | None]) -> dict[str, str]:
    """Tags to set on one exportable, as Slicer's DICOM export dialog would.

    Args:
        patient, study: tag name -> value read from the patient / study item (``GetItemAttribute(item,
            "DICOM." + name)``); empty or None values are skipped.
        series: tag name -> value read from the exported item itself (its series attributes).
        offered: the plugin's tags on the exportable (tag name -> default value); only these are overridden from
            ``series`` (a series attribute the plugin does not offer is not an export parameter).
    Returns tag name -> value (patient and study tags first, then the series overrides).
    """
    out: dict[str, str] = {}
    for source, names in ((patient, PATIENT_TAGS), (study, STUDY_TAGS)):
        for name in names:
            value = source.get(name)
            if value:
                out[name] = str(value)
    for name, default in offered.items():
        value = series.get(name)
        if value and value != default:
            out[name] = str(value)
    return out


def tag_exportables(exportables: Sequence[Any], item_attribute: Callable[[int, str], str], patient_item: int,
                    study_item: int, directory: str) -> None:
    """Set the output ``directory`` and :func:`exportable_tags` on each DICOM exportable of Slicer's plugins.

    ``item_attribute(item_id, attribute_name)`` reads a Subject Hierarchy attribute (``shNode.GetItemAttribute``);
    each exportable offers ``tag(name)``, ``setTag(name, value)``, ``subjectHierarchyItemID`` and ``directory``.
    """
    def attributes(item: int, names: Sequence[str]) -> dict[str, str]:
        return {t: item_attribute(item, attribute_name(t)) for t in names}

    patient, study = attributes(patient_item, PATIENT_TAGS), attributes(study_item, STUDY_TAGS)
    for exportable in exportables:
        exportable.directory = directory
        offered = {t: exportable.tag(t) for t in SERIES_TAGS if exportable.tag(t)}
        series = attributes(exportable.subjectHierarchyItemID, SERIES_TAGS)
        for name, value in exportable_tags(patient, study, series, offered).items():
            exportable.setTag(name, value)
