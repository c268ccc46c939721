from tdedge.cli import main

main()
