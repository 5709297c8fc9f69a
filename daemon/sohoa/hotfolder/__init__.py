"""The hot folder: files that network scanners save into a shared folder become jobs.

- :mod:`.names` decides which names in the folder are ignored (temporary and
  hidden files) and which capture profile a file gets from its subfolder;
- :mod:`.watcher` watches the folder with watchdog and reports a file once it
  is complete;
- :mod:`.formats` recognizes PDF, TIFF, JPEG and PNG by content and turns
  them into page images, or finds that a PDF is already signed;
- :mod:`.ledger` is the journal table that makes each import happen once;
- :mod:`.importer` imports one complete file on the daemon's worker thread.

The package imports none of its modules here, because the journal imports
:mod:`.ledger` while it opens.
"""
