"""Corpora, audio, protocols (folds), features and their cache: the first stage of the data flow."""
