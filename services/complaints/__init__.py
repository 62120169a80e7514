"""Complaints and satisfaction: SLAs, escalation, surveys, NPS."""
