from corsproxy.commands.launch import main

main()
