from xray_platform.cli import main

main()
