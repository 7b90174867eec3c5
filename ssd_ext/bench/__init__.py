"""The op benchmark, installed with the package: ``ssd bench`` (``ssd_ext.bench.bench_ops``), its
timing harness (``ssd_ext.bench.harness``, also used by the scripts in the source tree's
benchmarks/) and its cases, one ``cases_<stem>`` module per op family. Peers such as
torchvision are optional: a row whose implementation is not installed says so.
"""
