"""The lecture's experiments, reproduced end to end on fastopt's kernels (``fastopt demo``).

Each module has ``run(quick=False, seed=0, backend="cpu", progress=False) -> dict``,
``claims(result) -> [(claim, number shown, passed)]`` and ``plot(result, path)``:

- :mod:`~fastopt.experiments.gd_quadratic`: GD learning-rate sweep on a quadratic (the 2 / lambda_max threshold);
- :mod:`~fastopt.experiments.sgd_noise`: noisy SGD, the constant rate's plateau and decaying rates;
- :mod:`~fastopt.experiments.batch_size`: the batch-size experiment (wrapped in :mod:`~fastopt.experiments.report`);
- :mod:`~fastopt.experiments.pinn_optimisers`: SGD, heavy-ball momentum and Adam on a 1D PINN;
- :mod:`~fastopt.experiments.ls_deep_ritz`: the LS hybrid against Adam on an oscillatory Deep Ritz problem;
- :mod:`~fastopt.experiments.multilevel`: multilevel networks with Fourier features against one network.

:mod:`~fastopt.experiments.report` runs them, checks the claims and writes ``report.md`` with a
figure per experiment; :mod:`~fastopt.experiments.fused_updates` is the earlier stand-alone demo
of the fused updates (GD threshold, momentum against Adam, the fused Adam step's speed).
"""
