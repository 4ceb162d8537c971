"""`make bench`: how fast Sesame is, as ratios against a floor measured in the same run.

Dev tooling, never imported by the shipped package. `python -m bench.run --help` for the options.
"""
