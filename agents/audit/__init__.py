"""The auditor's tools: reading the audit log (topic or archive), reports, exports."""
