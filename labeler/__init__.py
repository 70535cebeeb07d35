"""NeurFlow labeler, evaluation, exports and the REST service."""
