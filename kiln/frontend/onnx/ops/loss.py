"""Loss functions: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss."""
