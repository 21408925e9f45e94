/* hydra/event.h */
#ifndef HYDRA_EVENT_H
#define HYDRA_EVENT_H

#endif /* HYDRA_EVENT_H */
