from bsbench.job.app import main

main()
