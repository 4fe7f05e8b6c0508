"""Tollway side by side with LiteLLM's proxy and Portkey's gateway, on the same core.

``python -m bench.peers setup`` installs the peers under ``.bench-peers/`` (git-ignored;
LiteLLM in a virtualenv of its own, Portkey with npm), ``python -m bench.peers run``
measures the canned upstream directly, Tollway with every feature on, LiteLLM's proxy
and Portkey's gateway one after another, each pinned to core 0, and
``python -m bench.peers memory`` compares the peak resident memory of Tollway and
LiteLLM's proxy under the same bounded session traffic.

Modules: ``install`` (setup, versions), ``systems`` (starting the upstream and the
peers, checking their answers), ``tollway`` (Tollway with Redis, ledger writer, key),
``measure`` (rounds, rotation, CPU per request), ``report`` (markdown),
``compare`` (the ``run`` command), ``memory`` (the ``memory`` command); CPU and RSS
of process trees come from ``bench.procfs``.
"""
