"""Training with torch: fine-tuning with grid search and early stopping, and pre-training of the demo zoo."""
