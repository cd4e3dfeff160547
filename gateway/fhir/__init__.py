"""FHIR R4 (4.0.1) for provider EHRs: parsing (``parse``), the ECM profiles (``profiles``),
OperationOutcome (``outcome``) and the file report (``report``). The mappings live in
``gateway.fhir.mapping``.

The canonical URLs and identifier systems below are the gateway's own (there is no published
ECM implementation guide); the StructureDefinitions in ``profiles/fhir/`` use the same ones.
"""

FHIR_VERSION = "4.0.1"
FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
JSON_MEDIA = "application/fhir+json"
XML_MEDIA = "application/fhir+xml"

BASE_URL = "https://ecm-gateway.example.org/fhir"
PROFILE_BASE = f"{BASE_URL}/StructureDefinition"
# Medi-Cal Client Index Number: 8 digits then a letter
CIN_SYSTEM = f"{BASE_URL}/sid/medi-cal-cin"
CIN_PATTERN = r"^[0-9]{8}[A-Z]$"
POF_SYSTEM = f"{BASE_URL}/CodeSystem/ecm-pof"
HCPCS_SYSTEM = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
# the HCPCS modifiers of a CarePlan activity (detail.extension, valueCode, 0..*)
HCPCS_MODIFIER_EXT = f"{PROFILE_BASE}/hcpcs-modifier"
# also read (as the mappings do): modifiers as codings of this system beside the HCPCS code
HCPCS_MODIFIER_SYSTEM = f"{BASE_URL}/CodeSystem/hcpcs-modifier"
# the date an activity was performed when scheduled[x] does not carry it (valueDateTime)
PERFORMED_DATE_EXT = f"{PROFILE_BASE}/performed-date"
CARE_TEAM_ROLE_SYSTEM = f"{BASE_URL}/CodeSystem/ecm-care-team-role"
LEAD_CARE_MANAGER = "LCM"
TASK_REASON_SYSTEM = f"{BASE_URL}/CodeSystem/ecm-referral-status-reason"
# the rule id of a finding, carried in OperationOutcome.issue.details.coding
RULE_SYSTEM = f"{BASE_URL}/CodeSystem/gateway-rule"

ECM_PROFILES = {
    "ServiceRequest": f"{PROFILE_BASE}/ecm-referral",
    "CarePlan": f"{PROFILE_BASE}/ecm-careplan",
    "Task": f"{PROFILE_BASE}/ecm-referral-task",
    "Patient": f"{PROFILE_BASE}/ecm-patient",
    "Coverage": f"{PROFILE_BASE}/ecm-coverage",
}
