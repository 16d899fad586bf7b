"""The command line: ``kfold-clr VERB ...`` parses arguments (`main`), prints (`commands`) and
writes starter files (`scaffold`)."""
