"""A study's candidates, as the search and its confirmation both build and start them.

Below both :mod:`compressor.search` and :mod:`compressor.confirm` (neither imports the other):

- :mod:`~compressor.candidates.setup`: :class:`~compressor.candidates.setup.SearchSetup`, what a
  process needs before its first candidate (the data, the base network, the parent, the floor,
  how the study builds its recipes), built once by
  :func:`~compressor.candidates.setup.prepare`; one ``start_candidate`` for a candidate's start;
- :mod:`~compressor.candidates.builder`: how candidates start (``Init``) and the one
  ``CandidateBuilder`` every candidate is built by (``SearchSetup.build``, and export);
- :mod:`~compressor.candidates.parents`: a trained parent read from a file, checked unchanged;
- :mod:`~compressor.candidates.stored`: the experiment a study stores, read as data.
"""
