"""The application layer: what a user runs, on top of every other layer (none of which imports it).

    fedcurate demo --out demo-out          # fedcurate.app.demo: 4 sites over Flower, ends with its report
    fedcurate select --config c.toml ...   # fedcurate.app.pipeline: centralized mode, one in-process site
    fedcurate simulate --config c.toml     # fedcurate.app.simulate: Flower's simulation runtime
    fedcurate report demo-out              # fedcurate.app.report: demo-out/report.html, every phase in plots
    python -m fedcurate.app.cli --help     # the same command line without the installed script

`local.LocalTransport` joins the server's phases and the site steps in one process, which only this layer
may do: `fedcurate.server` and `fedcurate.client` never import each other.
"""
