"""End-to-end tests: oneshot_nb's views in JupyterLab, driven in a real Chromium."""
