"""The offline commands `agcam export | explain | evaluate`: they use a trained model and never import Lightning."""
