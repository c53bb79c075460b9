from bsbench.app import main

main()
