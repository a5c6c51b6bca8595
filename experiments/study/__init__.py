"""The ordering study behind experiments/ordering_study.py: settings and plan, launching the sweeps, collecting
the runs' files, analysing them, drawing the figures and writing study.md / study.json."""
