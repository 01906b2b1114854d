"""Backups as assets: `backup_set` (catalog + every collection, one checked set in the artifact
store), `backup_retention` (what is past its age goes; the newest complete set stays), both run
by `backup_job` on `backup_schedule` (QUIVR_BACKUP_CRON, 02:00 by default), and the asset check
`check_backup_recent`: the newest complete set is younger than QUIVR_BACKUP_MAX_AGE_HOURS (26)."""
