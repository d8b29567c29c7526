from jobfleet.cli.main import main

main()
