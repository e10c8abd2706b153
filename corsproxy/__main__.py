from corsproxy.commands.cli import main

main()
