from kfold_clr.cli.main import entry_point

entry_point()
