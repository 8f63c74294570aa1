/* Events over HTTP (`lsq train --events FILE --events-url URL
 * --events-token-file F`, what lsqd's Slurm executor runs with
 * --slurm-events http): the training writes its events into a pipe; a
 * thread appends each line to FILE, as --events alone does, numbers it
 * (continuing the lines FILE already had: a resumed job goes on), and posts
 * them in batches to URL with the job's token. What lsqd has not
 * acknowledged stays buffered and is sent again, from the first
 * unacknowledged event, until lsqd answers; FILE keeps them all whatever
 * happens to the HTTP path. */
#ifndef LSQ_CLI_EVPOST_H
#define LSQ_CLI_EVPOST_H

typedef struct evpost evpost;

/* Opens file (appended), reads the token, starts the thread. Returns the
 * forwarder with *write_fd the pipe end to give to ev_sink_init, or NULL
 * after printing why to stderr. */
evpost *evpost_start(const char *file, const char *url, const char *token_file, int *write_fd);
/* Closes the pipe end, waits until every event is acknowledged or
 * give_up_s seconds pass, and frees. Returns the events left unacknowledged
 * (still in the file). */
long evpost_finish(evpost *p, double give_up_s);

#endif
