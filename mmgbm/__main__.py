from mmgbm.cli import main

# Guarded: the worker processes of `--cluster local` import the main module again when they start.
if __name__ == "__main__":
    main()
