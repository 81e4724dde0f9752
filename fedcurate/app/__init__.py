"""Application layer of fedcurate: the command line, the CPU demo, run reports and comparisons.

    fedcurate demo --out demo-out          # fedcurate.app.demo: 4 sites over Flower, ends with its report
    fedcurate report demo-out              # fedcurate.app.report: demo-out/report.html, every phase in plots
    python -m fedcurate.app.cli --help     # the same command line without the installed script

It sits on top of `fedcurate.server`, `fedcurate.client`, `fedcurate.strategies` and `fedcurate.common`,
none of which imports it.
"""
