"""Analysis of finished ablations: summary tables, plots and reports from MLflow runs.

- `summary.log_ablation_summary`: the table and stage-wise plot logged to an
  ablation's parent run when its grid ends.
- `report` and `plots`: the fuller report of ``pipelines/report.py``.
"""
