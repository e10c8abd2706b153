from corsproxy.cli import main

main()
