"""Reports: summary.json, results.csv, per_target.csv and report.md from evaluation records."""
