"""Versioned prompt templates for captioning neuron groups."""
