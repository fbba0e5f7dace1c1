from tests.ossfs_rules.fs import main

main()
