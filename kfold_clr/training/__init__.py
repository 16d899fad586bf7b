"""Training: each fold's plan and schedule (`fold_plans`), models, one fold trained by Keras
(`trainer`) or several folds as one model (`fused`), tuned strategies (`tuning`), and the record
each fold leaves (`fold_record`)."""
