"""The Machine side: one AKS agent pool (one GPU node) per Machine, decided from the request alone."""
