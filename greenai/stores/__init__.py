"""Stores: where results live and how greenai reaches them: store URLs, the MLflow tracking
store, the Optuna study storage, the sweep folder's shared files, waiting for a busy or absent
store, a full disk, credentials kept out of logs. Knows MLflow, Optuna and SQLAlchemy; nothing
of torch."""
