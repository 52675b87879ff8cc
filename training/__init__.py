"""ML side of demandcast: training set, petastorm input, Wide & Deep, Horovod, evaluation."""
