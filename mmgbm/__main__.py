from mmgbm.cli import main

main()
