from recoverctl.cli.main import main

main()
