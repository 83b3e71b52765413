"""tiergate's operator: reconciles ModelRoute and ApiKeyTier into gateways."""
