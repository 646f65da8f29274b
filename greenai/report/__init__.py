"""Reports over what MLflow holds: pure analysis functions, plots and a markdown writer."""
