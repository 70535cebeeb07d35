"""NeurFlow engine: core neurons, concepts, neuron groups and circuits."""
