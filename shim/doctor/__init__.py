"""``eventlive doctor``: checks a live database (ours or a Supabase project) against the
rules — RLS, policy forms, definer search_path, grants, indexes, migrations — with fix SQL."""

from shim.doctor.checks import Finding
from shim.doctor.diagnose import DoctorError, Report, check_ids, diagnose

__all__ = ["DoctorError", "Finding", "Report", "check_ids", "diagnose"]
