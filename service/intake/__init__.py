"""Intake: every upload checked before anything is stored (model descriptors and safetensors weights,
dataset zips, images)."""
