"""FHIR mappings as data (``mappings/fhir/*.yaml``) and the small engine that applies them:
ServiceRequest → referral record, Task and CarePlan → RTF rows, CarePlan → canonical encounters
(→ 837P), MIF rows → FHIR Bundle, canonical encounters → FHIR Bundle."""

from gateway.fhir.mapping.careplan import careplan_to_encounters

__all__ = ["careplan_to_encounters"]
