"""Planning, before anything trains: check the config and data (`preflight`), run or reload the
range tests that bounds need (`bounds`), and form the folds still to do into jobs (`jobs`)."""
