"""FHIR mappings as data (``mappings/fhir/*.yaml``) and the small engine that applies
them: ServiceRequest → referral record, Task and CarePlan → RTF rows, CarePlan → canonical
encounters (→ 837P), MIF rows → FHIR Bundle, canonical encounters → FHIR Bundle. The CLI entry
point is
:func:`gateway.fhir.mapping.convert.convert_fhir`."""

from gateway.fhir.mapping.careplan import careplan_to_encounters
from gateway.fhir.mapping.encounters import (
    EncounterBundleWriter,
    encounter_entries,
    encounters_to_bundle,
    write_encounter_bundle,
    x12_to_bundle,
)
from gateway.fhir.mapping.engine import MappingSpecError
from gateway.fhir.mapping.mif import mif_file_to_bundle, mif_to_bundle
from gateway.fhir.mapping.referral import (
    Referral,
    servicerequest_to_referral,
    servicerequests_to_referrals,
)
from gateway.fhir.mapping.rtf import (
    careplan_to_rtf,
    careplans_to_rtf,
    task_to_rtf,
    tasks_to_rtf,
    write_rtf_csv,
)

__all__ = [
    "EncounterBundleWriter", "MappingSpecError", "Referral", "careplan_to_encounters",
    "careplan_to_rtf", "careplans_to_rtf", "encounter_entries", "encounters_to_bundle",
    "mif_file_to_bundle", "mif_to_bundle", "servicerequest_to_referral",
    "servicerequests_to_referrals", "task_to_rtf", "tasks_to_rtf", "write_encounter_bundle",
    "write_rtf_csv", "x12_to_bundle",
]
