"""The train stage: training set, preprocessing, petastorm input, Wide & Deep, the Horovod training
function and its launchers, the model directory and the models table.

The later stages sit in subpackages on top of it: `evaluation/`, `scoring/`, `reporting/`.
"""
