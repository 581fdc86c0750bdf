"""What the tests share, a module a job: `stacks` (the database and broker they run on), `people`
(a sign-up's input), `calls` (starting sagas and waiting for them), `checks` (the rows and
answers they must find), `scripted` (participants in-process), `stand_ins` (servers in place of
the world's). Import from the module itself."""
