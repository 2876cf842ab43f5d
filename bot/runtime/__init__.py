"""The daemon: feeds, scheduler jobs and the loop feed -> signals -> strategy -> risk -> broker."""
