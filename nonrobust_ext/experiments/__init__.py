"""End-to-end jobs composed from the library, each behind a ``nonrobust-ext`` command:

- :mod:`.study` — the transfer study (Zhang et al., AAAI 2023): six models per seed trained in cached
  stages, evaluated and analysed, summarised over seeds into ``results.json``, ``report.md`` and plots
  (``nonrobust-ext study``);
- :mod:`.demo` — a small CNN on synthetic data attacked with PGD against random noise, in seconds
  (``nonrobust-ext demo``).

Their configs describe every setting once (:mod:`._settings`); the CLI builds its options from those
descriptions. :mod:`._output` checks an output folder before any work starts.
"""
